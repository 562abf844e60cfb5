"""How every process here talks to Temporal: one address, one namespace, the pydantic data converter."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from tenancy.settings import Settings


async def connect_client(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


def metrics_runtime(port: int) -> Runtime:
    """A runtime whose metrics (the SDK's and ours, from metric meters) are served for Prometheus on the port."""
    return Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}", counters_total_suffix=True))
    )


def ui_link(settings: Settings, workflow_id: str) -> str:
    from urllib.parse import quote

    return (
        f"{settings.temporal_ui_url.rstrip('/')}/namespaces/{settings.temporal_namespace}"
        f"/workflows/{quote(workflow_id, safe='')}"
    )


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register the TenantId keyword search attribute where it is missing (dev server or a cluster)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest

    from tenancy.search import TENANT_ID

    existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    if TENANT_ID.name in existing.custom_attributes:
        return []
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={TENANT_ID.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
        )
    )
    return [TENANT_ID.name]
