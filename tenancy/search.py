"""Search attributes the project registers and sets, so runs are easy to find."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

TENANT_ID = SearchAttributeKey.for_keyword("TenantId")


def tenant_attributes(tenant_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(TENANT_ID, tenant_id)])
