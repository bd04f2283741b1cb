"""Draft-model chains and trees against vanilla and HF assisted generation; the verification width buckets. See
README.md."""
