"""wxbot skills: the built-in skills, mounted in one service."""
