"""explore-instruct: domain-specific instruction data by exploring a domain as a tree of tasks."""

__version__ = "0.2.0"
