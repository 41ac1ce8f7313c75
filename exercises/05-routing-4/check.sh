program route_by_hand.c
