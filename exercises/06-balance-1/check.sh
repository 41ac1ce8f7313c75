program even_router.c
