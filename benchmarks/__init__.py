"""Scripts that measure and print; see RESULTS.md."""
