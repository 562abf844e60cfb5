"""Shared contracts of tenant-lifecycle: settings, models, naming rules, errors and pure policies."""
