"""Image I/O, paired folders, dataset layouts and synthetic scenes."""
