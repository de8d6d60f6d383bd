"""Real local HTTP servers speaking the external SaaS protocols (WeCom, OpenAI), with fault knobs.

Import the submodules directly (``wxbot_devkit.fakes.wecom``, ``.llm``, ``.server``); this package
imports nothing so that ``python -m wxbot_devkit.fakes.<name>`` runs without a double import.
"""
