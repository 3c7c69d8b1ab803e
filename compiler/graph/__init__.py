"""Pictures of the mesh: a graph model built from the IR, and one renderer per format."""

# Here, not in draw.py, so that the command line lists the formats without importing the renderers.
FORMATS = ("mermaid", "dot", "svg", "html")
