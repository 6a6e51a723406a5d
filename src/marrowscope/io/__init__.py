"""Reading and writing slides, annotations and tables. Never imports :mod:`marrowscope.models`."""
