"""Classical baselines that a paper table puts beside the models (`jaxformer baseline`)."""
