"""icd: the interface registry of the CTAO DATA work package, its documents, reports and Redmine sync."""
__version__ = "0.1.0"
