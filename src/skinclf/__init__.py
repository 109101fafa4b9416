"""skinclf: skin-lesion classifiers that know when not to answer."""

__version__ = "0.1.0"
