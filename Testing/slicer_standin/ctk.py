"""Stand-in for CTK's Python module: importable only. The module widgets (which build ctk widgets) are not
exercised here; their logic classes and self-tests are."""
