"""What workflows and their activities exchange inside one run: internal, free to change with the workflow code
(behind workflow.patched where commands change).

Every activity takes one model. Attempts the previous release scheduled are still in flight across an upgrade: a
model that replaced one bare value accepts that value (a `mode="before"` validator); an activity that took several
arguments keeps the ones after the first as optional `legacy_*` parameters and builds its model from them. Such an
activity gets its model as a plain dict when called by this release: the worker decodes arguments by the
signature's type hints only when the call has as many as the signature (`Model.model_validate` takes either)."""
