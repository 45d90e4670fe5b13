"""ModelArts API client: authentication, requests with retries, typed errors."""
