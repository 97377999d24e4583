"""Stage 4, evaluate: metrics, prompt protocols, floors, real-data cases and reports."""
