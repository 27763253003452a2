from options.base_options import BaseOptions  # noqa: F401
