"""Loss pieces that several tasks use."""
