build build/dsv2 && build/dsv2 tokenize -m models/tiny-kjv -p "<｜begin▁of▁sentence｜>And"
