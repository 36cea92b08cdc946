"""Model-backed agents and reviewers: settings, the litellm client, prompts, injection checks.

Nothing in this package imports litellm at import time: only
``crossreview.llm.client.load_litellm()`` does, on the first model call, so
`crossreview --help` and offline runs never pay for it.
"""
