"""What fidoctor knows about FlashInfer itself: names, layouts, logs, versions.

Kept apart from gathering and judging so the knowledge (and its sources) sits
in one place; see ../shared/knowledge/flashinfer-jit.md.
"""
