"""Cost of one exchange, from the ``genai-prices`` database (never a hand-written table)."""

from __future__ import annotations

from genai_prices import Usage, calc_price

# genai-prices caches the models it finds but not the ones it does not: an unknown name
# (a local model, a mock) costs a scan of every price rule, about 0.3 ms, on every call.
_UNKNOWN: set[tuple[str, str]] = set()
_UNKNOWN_MAX = 4096


def cost_usd(
    provider: str,
    model: str,
    input_tokens: int | None,
    output_tokens: int | None,
    cached_tokens: int | None,
    *,
    cache_write_tokens: int | None = None,
) -> float | None:
    """USD cost of one call, or None when the model is unknown or usage was not reported.

    ``provider`` is a genai-prices provider id ("openai", "anthropic", "google", ...).
    ``input_tokens`` counts *all* input tokens, cached ones included (OpenAI's
    ``prompt_tokens`` convention): genai-prices prices ``cached_tokens`` (cache reads) and
    ``cache_write_tokens`` as parts of it. APIs that report cache reads/writes separately
    from input (Anthropic) must add them to ``input_tokens`` before calling.
    Never raises: inconsistent usage (cached > input, negative counts) also gives None.
    """
    if not provider or not model or input_tokens is None or output_tokens is None:
        return None
    try:
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cached_tokens or None,
            cache_write_tokens=cache_write_tokens or None,
        )
    except Exception:  # bad usage: no price
        return None
    key = (provider, model)
    if key in _UNKNOWN:
        return None
    try:
        return float(calc_price(usage, model, provider_id=provider).total_price)
    except LookupError:  # unknown model or provider
        if len(_UNKNOWN) < _UNKNOWN_MAX:
            _UNKNOWN.add(key)
        return None
    except Exception:  # inconsistent usage
        return None
