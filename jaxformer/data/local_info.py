"""The `DatasetInfo` of the tfds data sets jaxformer builds from local files."""

from __future__ import annotations

import tensorflow_datasets as tfds


class LocalDatasetInfo(tfds.core.DatasetInfo):
    """Info of a data set built here, which is never on tfds's GCS bucket.

    tfds looks each unprepared data set up on the bucket, and for that makes a temporary
    directory that it never removes: every preparation left empty /tmp/tmp*tfds behind.
    """

    def initialize_from_bucket(self) -> None:
        """Nothing to fetch: the info comes from the builder's code."""
