"""Pictures of the mesh: a graph model built from the IR, and one renderer per format."""
