"""Development-only tools: never imported by what runs on the reader."""
