"""motorpool engine plugin for llama.cpp."""
