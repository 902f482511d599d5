"""I/O drivers that execute routing flows: sync (httpx.Client) and async (httpx.AsyncClient)."""
