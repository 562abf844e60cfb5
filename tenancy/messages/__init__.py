"""What workflows and their activities exchange inside one run: internal, free to change with the workflow code
(behind workflow.patched where commands change)."""
