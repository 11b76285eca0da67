"""One IterResearch agent: workspace, output parser, round loop."""
