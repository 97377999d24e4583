"""Pipeline stage: segment."""
