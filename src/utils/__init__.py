"""Small helpers shared by the rest of the package."""
