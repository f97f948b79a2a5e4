"""fidoctor: a doctor for FlashInfer JIT hangs."""

__version__ = "0.1.0"
