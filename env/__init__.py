"""The inbox environment: ingestion, the inbox DB, the agent's tools, the agent loop, model endpoints."""
