"""Offline, deterministic tools of the research example (a small in-memory web)."""

from __future__ import annotations

import re

# The whole "web" this agent can see: URL -> (title, text).
PAGES: dict[str, tuple[str, str]] = {
    "https://history.example.org/atlantic-cable-1858": (
        "The 1858 Atlantic Telegraph Cable",
        "The first transatlantic telegraph cable was completed on 5 August 1858 between "
        "Valentia Island, Ireland, and Trinity Bay, Newfoundland. On 16 August Queen Victoria "
        "sent President James Buchanan a message of congratulation; its 98 words took many "
        "hours to transmit. The cable worked for only about three weeks: signals weakened "
        "and it fell silent in early September 1858.",
    ),
    "https://engineering.example.net/whitehouse-voltage": (
        "Why the 1858 cable failed: Whitehouse and the induction coils",
        "The Atlantic Telegraph Company's electrician, Wildman Whitehouse, believed high "
        "voltage was needed to push signals through 2,000 miles of cable. When signals "
        "faded he applied about 2,000 volts from induction coils, which broke down the "
        "cable's gutta-percha insulation. William Thomson (later Lord Kelvin) had argued for "
        "low voltages and a sensitive mirror galvanometer. Whitehouse was dismissed, and "
        "later cables were worked on Thomson's principles.",
    ),
    "https://encyclopedia.example.com/transatlantic-telegraph-cable": (
        "Transatlantic telegraph cable",
        "Transatlantic telegraph cables were laid from 1858; a lasting connection came only "
        "with the 1866 cable laid by the Great Eastern. The 1858 cable's short life was due "
        "to poor manufacture and to excessive voltage applied in an attempt to speed up "
        "signalling.",
    ),
    "https://travel.example.org/valentia-island": (
        "Visiting Valentia Island",
        "Valentia Island, off the Kerry coast, has a cable station museum, a lighthouse "
        "and fine walks. Ferries run from Reenard Point in summer.",
    ),
}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def search(query: str, max_results: int = 3) -> list[dict]:
    """Search the web; results are ranked by how many query words the page contains.

    Args:
        query: Keywords, e.g. "1858 atlantic cable failure".
        max_results: How many results to return (1-5).
    """
    wanted = _words(query)
    scored = []
    for url, (title, text) in PAGES.items():
        score = len(wanted & _words(title + " " + text))
        if score:
            scored.append((-score, url, title, text))
    scored.sort()
    return [
        {"url": url, "title": title, "snippet": text[:120] + "…"}
        for _, url, title, text in scored[: max(1, min(max_results, 5))]
    ]


def fetch_page(url: str) -> str:
    """Fetch the text of a page.

    Args:
        url: A URL returned by search.
    """
    try:
        title, text = PAGES[url]
    except KeyError:
        raise LookupError(f"404 Not Found: {url}") from None
    return f"{title}\n\n{text}"


def cite_sources(urls: list[str]) -> str:
    """Record the URLs the answer relies on (each must be a page that exists).

    Args:
        urls: The pages the answer is based on.
    """
    unknown = [u for u in urls if u not in PAGES]
    if unknown:
        raise LookupError(f"not a known page: {', '.join(unknown)}")
    return f"{len(urls)} source(s) recorded: " + "; ".join(PAGES[u][0] for u in urls)


def answer(text: str) -> str:
    """Give the final answer to the user.

    Args:
        text: The answer, a few sentences.
    """
    return text
