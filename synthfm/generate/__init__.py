"""Pipeline stage: generate."""
