"""Publishing a run or a study: a Hugging Face dataset folder (Parquet + card) and the push to the Hub."""
