"""Who is calling and what they may do: API key secrets (`keys`), roles and principals
(`roles`)."""
