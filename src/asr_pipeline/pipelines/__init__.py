"""The Kedro pipelines, one folder each; ``pipeline_registry`` finds them."""
