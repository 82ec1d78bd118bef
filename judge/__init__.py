"""The judge that turns an answer into a verdict, the reward built on it, and batch evaluation."""
