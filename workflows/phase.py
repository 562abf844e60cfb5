"""A run's current phase, where people look: its `progress` query (what `tenants` shows) and its current details
in the Temporal Web UI."""

from __future__ import annotations

from temporalio import workflow


class ShowsPhase:
    """Setting `self._phase` also sets the run's current details (workflow.set_current_details), which the Web UI
    shows on the run's page. They are not a command: histories recorded before replay unchanged, with no patch."""

    _current_phase = ""

    @property
    def _phase(self) -> str:
        return self._current_phase

    @_phase.setter
    def _phase(self, phase: str) -> None:
        self._current_phase = phase
        workflow.set_current_details(phase)
