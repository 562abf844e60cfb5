"""The pure placement rules of tenancy/servers.py, over many generated fleets: where a new tenant goes, how free a
server is, which moves between major versions are allowed."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenancy.errors import InvalidInput
from tenancy.servers import (
    SERVER_STATUSES,
    ServerLoad,
    choose_server,
    move_dump_major,
    move_target_problem,
    relative_free_share,
    validate_server_name,
)

# Realistic bounds: up to a million tenants and a petabyte a server (floats stay exact enough to compare).
_limit = st.one_of(st.none(), st.integers(min_value=1, max_value=1_000_000))
_size_limit = st.one_of(st.none(), st.integers(min_value=1, max_value=2**50))


@st.composite
def loads(draw: st.DrawFn, name: str | None = None) -> ServerLoad:
    max_tenants = draw(_limit)
    max_size = draw(_size_limit)
    tenants = draw(st.integers(min_value=0, max_value=(max_tenants or 1000) * 2))
    size = draw(st.integers(min_value=0, max_value=(max_size or 2**40) * 2))
    return ServerLoad(
        name=name or draw(st.from_regex(r"^[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?$", fullmatch=True)),
        status=draw(st.sampled_from(SERVER_STATUSES)),
        max_tenants=max_tenants,
        max_size_bytes=max_size,
        tenants=tenants,
        size_bytes=size,
    )


@st.composite
def fleets(draw: st.DrawFn) -> list[ServerLoad]:
    names = draw(st.lists(st.from_regex(r"^[a-z][a-z0-9]{0,5}$", fullmatch=True), min_size=1, max_size=8, unique=True))
    return [draw(loads(name)) for name in names]


@given(loads())
def test_the_free_share_is_between_0_and_1_and_0_exactly_when_full(load: ServerLoad) -> None:
    assert 0.0 <= load.free_share <= 1.0
    assert (load.free_share == 0.0) == load.full


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=2**50))
def test_a_server_with_no_limits_is_never_full(tenants: int, size: int) -> None:
    load = ServerLoad(name="a", tenants=tenants, size_bytes=size)
    assert load.free_share == 1.0 and not load.full


@given(loads(), st.integers(min_value=1, max_value=100), st.integers(min_value=0, max_value=2**30))
def test_more_tenants_or_more_data_never_frees_room(load: ServerLoad, more: int, grown: int) -> None:
    bigger = load.model_copy(update={"tenants": load.tenants + more, "size_bytes": load.size_bytes + grown})
    assert bigger.free_share <= load.free_share
    assert bigger.full or not load.full


@given(fleets())
def test_a_new_tenant_goes_to_the_open_server_with_the_most_room(fleet: list[ServerLoad]) -> None:
    open_with_room = [load for load in fleet if load.status == "open" and not load.full]
    if not open_with_room:
        with pytest.raises(InvalidInput, match="no open server has room"):
            choose_server(fleet)
        return
    chosen = next(load for load in fleet if load.name == choose_server(fleet))
    assert chosen.status == "open" and not chosen.full
    ref_tenants = max((load.max_tenants for load in open_with_room if load.max_tenants), default=None)
    ref_bytes = max((load.max_size_bytes for load in open_with_room if load.max_size_bytes), default=None)

    def free(load: ServerLoad) -> float:
        return relative_free_share(load, ref_tenants, ref_bytes)

    assert free(chosen) == max(free(load) for load in open_with_room)


def test_an_unlimited_server_is_weighed_against_the_limited_ones() -> None:
    """The issue's set-up: `default` without limits holds 50 tenants, pg-b was added with --max-tenants 2000. New
    tenants go to pg-b until it holds as many, then alternate: the least-loaded server, not the limitless one."""
    fleet = {"default": ServerLoad(name="default", tenants=50), "pg-b": ServerLoad(name="pg-b", max_tenants=2000)}
    placed = []
    for _ in range(110):
        name = choose_server(list(fleet.values()))
        placed.append(name)
        fleet[name] = fleet[name].model_copy(update={"tenants": fleet[name].tenants + 1})
    assert placed[:50] == ["pg-b"] * 50
    assert fleet["default"].tenants == fleet["pg-b"].tenants == 80


@given(fleets(), st.randoms(use_true_random=False))
def test_the_choice_does_not_depend_on_the_order_servers_are_listed(
    fleet: list[ServerLoad], rnd: random.Random
) -> None:
    shuffled = list(fleet)
    rnd.shuffle(shuffled)
    try:
        first = choose_server(fleet)
    except InvalidInput:
        with pytest.raises(InvalidInput):
            choose_server(shuffled)
        return
    assert choose_server(shuffled) == first


@given(fleets(), st.data())
def test_a_server_asked_for_is_taken_only_when_it_is_open_with_room(
    fleet: list[ServerLoad], data: st.DataObject
) -> None:
    asked = data.draw(st.sampled_from(fleet))
    if asked.status == "open" and not asked.full:
        assert choose_server(fleet, asked.name) == asked.name
    else:
        with pytest.raises(InvalidInput, match=asked.name):
            choose_server(fleet, asked.name)


@given(fleets())
def test_a_server_nobody_knows_is_refused_by_name(fleet: list[ServerLoad]) -> None:
    with pytest.raises(InvalidInput, match="no server named 'zz-unknown'"):
        choose_server(fleet, "zz-unknown")


def test_ties_go_to_fewer_tenants_then_less_data_then_the_name() -> None:
    fleet = [
        ServerLoad(name="c", tenants=2, size_bytes=10),
        ServerLoad(name="b", tenants=1, size_bytes=30),
        ServerLoad(name="a", tenants=1, size_bytes=30),
        ServerLoad(name="d", tenants=1, size_bytes=20),
    ]
    assert choose_server(fleet) == "d"
    assert choose_server([f for f in fleet if f.name != "d"]) == "a"


def test_a_draining_or_closed_server_takes_no_new_tenant_even_when_empty() -> None:
    fleet = [
        ServerLoad(name="empty-drain", status="draining"),
        ServerLoad(name="empty-closed", status="closed"),
        ServerLoad(name="busy", max_tenants=10, tenants=9),
    ]
    assert choose_server(fleet) == "busy"
    with pytest.raises(InvalidInput, match="draining"):
        choose_server(fleet, "empty-drain")


@given(st.integers(min_value=9, max_value=30), st.integers(min_value=9, max_value=30))
def test_moves_go_up_or_across_never_down(source: int, target: int) -> None:
    problem = move_target_problem(source, target)
    assert (problem is None) == (target >= source)
    if problem:
        assert str(source) in problem and str(target) in problem
    if problem is None:
        # The tools of the newer server: its pg_dump reads the older one, its archive restores into its own.
        assert move_dump_major(source, target) == target


@given(st.text(max_size=50))
def test_a_server_name_is_accepted_only_in_its_documented_shape(name: str) -> None:
    shaped = (
        1 <= len(name) <= 40
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in name)
        and not name.startswith("-")
        and not name.endswith("-")
    )
    if shaped:
        assert validate_server_name(name) == name
    else:
        with pytest.raises(InvalidInput):
            validate_server_name(name)


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidInput):
        validate_server_name("pg-b\n")
