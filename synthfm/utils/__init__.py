"""Small helpers shared by every stage (progress reporting, cancellation)."""
