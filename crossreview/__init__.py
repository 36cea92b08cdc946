"""crossreview: give one coding task to several agents, let them review each other,
and ask a human only when they disagree.

The command line (crossreview.cli) and the pytest plugin are thin faces over
this library: crossreview.runner runs suites, crossreview.graph is the
LangGraph pipeline, crossreview.hookspecs documents every plugin hook.
"""

__version__ = "0.1.0"
