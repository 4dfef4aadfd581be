"""ivr package."""
