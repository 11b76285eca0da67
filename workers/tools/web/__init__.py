"""Real web research behind `search`, `visit` and `google_scholar` (built by
`workers.tools.factory.build_tools`; never in offline mode).

    types.py       the provider seam: `SearchProvider`, `Hit`, `Locale` (+ CJK detection)
    providers/     one module per search API (SearXNG, Serper + Scholar, Tavily, Brave, local)
    chain.py       the ordered fallback chain
    search.py      the search tools over the chain, cached
    ssrf.py        the address guard every fetched url (and redirect) passes
    fetch.py       bounded page fetching, pinned to checked addresses; optional reader service
    extract.py     main text from HTML (trafilatura), PDF (pypdf) and plain text
    summarise.py   goal-directed evidence + summary by the summariser model
    visit.py       the web half of visit: fetch, extract, summarise, cached
    cache.py       the shared cache with in-process and cross-process coalescing
    http.py        bounded reads and error details shared by the above
"""
