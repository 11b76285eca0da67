"""HTTP routes: `research` is the /v1 job API, `ops` health, readiness, metrics and the web page."""
