"""Network plumbing that tools and webhooks share: the SSRF guard (`ssrf`), the client for
guarded fetches (`client`), bounded reads of what a server sends (`reads`) and retry timing
(`retry`)."""
