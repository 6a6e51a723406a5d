"""The paper's study: patient splits, a fingerprinted stage runner, the results table (``reproduce``)."""
