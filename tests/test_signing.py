"""tenancy.signing: what a signature covers, which keys verify, and the key file's text."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenancy.errors import InvalidInput
from tenancy.signing import (
    Keyring,
    NotAuthentic,
    SigningKey,
    canonical_bytes,
    new_key,
    parse_keyring,
    sign_document,
    verify_document,
    with_new_signing_key,
)

NOW = datetime(2025, 3, 1, tzinfo=UTC)
KEYRING = Keyring((new_key(NOW), new_key(NOW)))

scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
documents = st.dictionaries(
    st.text(max_size=12).filter(lambda k: k not in ("signature", "key_id")), values, min_size=1, max_size=8
)


def stored(document: dict) -> dict:
    """The document as a reader finds it: written as JSON (indented, as storage does) and read back."""
    return json.loads(json.dumps(document, indent=2))


@given(documents)
def test_a_signed_document_verifies_as_read_back_from_storage(document):
    signed = sign_document(document, KEYRING)
    assert signed["key_id"] == KEYRING.signing.key_id
    assert verify_document(stored(signed), KEYRING) == KEYRING.signing


@given(documents, st.data())
def test_any_change_to_any_field_fails(document, data):
    signed = stored(sign_document(document, KEYRING))
    field = data.draw(st.sampled_from(sorted(k for k in signed if k != "signature")))
    replacement = data.draw(values.filter(lambda v: v != signed[field]))
    changed = {**signed, field: replacement}
    with pytest.raises(NotAuthentic):
        verify_document(changed, KEYRING)


@given(documents, st.text(max_size=8).filter(lambda k: k not in ("signature", "key_id")), values)
def test_an_added_or_removed_field_fails(document, extra, value):
    signed = stored(sign_document(document, KEYRING))
    removed = {k: v for k, v in signed.items() if k != extra}
    changed = removed if extra in signed else {**signed, extra: value}
    with pytest.raises(NotAuthentic):
        verify_document(changed, KEYRING)


@given(documents)
def test_key_id_is_covered_and_an_unknown_key_fails(document):
    signed = stored(sign_document(document, KEYRING))
    other_key = KEYRING.keys[1]
    # The same signature claimed for another key of the ring: that key's MAC differs.
    with pytest.raises(NotAuthentic, match="does not match"):
        verify_document({**signed, "key_id": other_key.key_id}, KEYRING)
    stranger = Keyring((new_key(NOW),))
    with pytest.raises(NotAuthentic, match="not in the keyring"):
        verify_document(stored(sign_document(document, stranger)), KEYRING)


@given(documents)
def test_an_unsigned_document_fails(document):
    with pytest.raises(NotAuthentic, match="not signed"):
        verify_document(document, KEYRING)
    with pytest.raises(NotAuthentic, match="not signed"):
        verify_document({**document, "signature": None, "key_id": KEYRING.signing.key_id}, KEYRING)


def test_canonical_form_is_sorted_compact_utf8_and_ignores_the_signature():
    assert canonical_bytes({"b": 1, "a": "é", "signature": "x"}) == '{"a":"é","b":1}'.encode()


def test_older_keys_still_verify_after_rotation():
    old = Keyring((new_key(NOW),))
    signed = stored(sign_document({"backup_name": "x"}, old))
    rotated = Keyring((new_key(NOW), *old.keys))
    assert verify_document(signed, rotated) == old.signing
    assert sign_document({"backup_name": "x"}, rotated)["key_id"] == rotated.signing.key_id


def test_key_file_text_first_key_signs_comments_allowed():
    first, second = new_key(NOW), new_key(NOW)
    text = f"# keys\n\n{first.line()}\n  # old one\n{second.line()}\n"
    keyring = parse_keyring(text)
    assert [k.key_id for k in keyring.keys] == [first.key_id, second.key_id]
    assert keyring.signing == first
    newer = new_key(NOW)
    rotated = with_new_signing_key(text, newer)
    assert rotated.startswith("# keys\n\n" + newer.line() + "\n")
    assert [k.key_id for k in parse_keyring(rotated).keys] == [newer.key_id, first.key_id, second.key_id]
    assert first.key_id.startswith("k20250301-")
    assert base64.b64encode(first.secret).decode() not in repr(first)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        ("no-colon-here\n", "line 1: expected key_id:base64secret"),
        ("k1:!!notbase64!!\n", "line 1: the secret is not base64"),
        ("k1:" + base64.b64encode(b"short").decode() + "\n", "line 1: the secret has 5 bytes"),
        ("bad id:" + base64.b64encode(bytes(32)).decode() + "\n", "line 1: invalid key id"),
        ("\n".join(["k1:" + base64.b64encode(bytes(32)).decode()] * 2), "appear twice"),
    ],
)
def test_malformed_key_files_are_refused_naming_the_line(text, message):
    with pytest.raises(InvalidInput, match=message):
        parse_keyring(text)


def test_new_keys_avoid_ids_taken():
    taken = {new_key(NOW).key_id for _ in range(50)}
    assert new_key(NOW, taken).key_id not in taken
    assert isinstance(new_key(NOW), SigningKey) and len(new_key(NOW).secret) == 32


def test_every_process_of_the_stack_finds_its_signing_key(tmp_path, monkeypatch):
    """A second worker or a CLI beside `tenants up` must sign and verify as the stack's worker does: without
    TENANTS_BACKUP_SIGNING_KEY_FILE they take the key file of the state folder, when there is one."""
    from activities.infra.manifest_signing import create_key_file
    from tenancy.settings import STACK_SIGNING_KEY_FILE, Settings

    monkeypatch.delenv("TENANTS_BACKUP_SIGNING_KEY_FILE", raising=False)
    assert Settings(state_dir=tmp_path).backup_signing_key_file is None
    create_key_file(tmp_path / STACK_SIGNING_KEY_FILE)
    assert Settings(state_dir=tmp_path).backup_signing_key_file == (tmp_path / STACK_SIGNING_KEY_FILE).resolve()
    elsewhere = tmp_path / "other.keys"
    assert Settings(state_dir=tmp_path, backup_signing_key_file=elsewhere).backup_signing_key_file == elsewhere
