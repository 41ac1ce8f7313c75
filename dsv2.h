/**
 * \file dsv2.h
 * \brief What the command-line program's files share: the parsed command line and the helpers every
 * command uses (dsv2.c), and the commands that run the model (dsv2_generate.c).
 */
#ifndef DSV2_CLI_H
#define DSV2_CLI_H

#include "tokenizer.h"

#include <time.h>

/** Options, one bit each, so that every command can say which it takes. */
enum {
    O_M = 1 << 0,
    O_IDS = 1 << 1,
    O_P = 1 << 2,
    O_F = 1 << 3,
    O_O = 1 << 4,
    O_N = 1 << 5,
    O_T = 1 << 6,
    O_TOP_P = 1 << 7,
    O_TOP_K = 1 << 8,
    O_REPEAT = 1 << 9,
    O_SEED = 1 << 10,
    O_BACKEND = 1 << 11,
    O_DTYPE = 1 << 12,
    O_CTX = 1 << 13,
    O_SYSTEM = 1 << 14,
    O_STOP = 1 << 15,
    O_DEVICES = 1 << 16,
    O_LIMIT = 1 << 17,
    O_ALPHA = 1 << 18,
    O_PLOT = 1 << 19,
    O_CONFIG = 1 << 20,
    O_DATA = 1 << 21,
    O_STEPS = 1 << 22,
    O_BATCH = 1 << 23,
    O_SEQ = 1 << 24,
    O_LR = 1 << 25,
    O_WARMUP = 1 << 26,
    O_CAPACITY = 1 << 27,
    O_RESUME = 1 << 28,
    O_EVAL = 1 << 29,
    O_TOKENIZER = 1 << 30,
};
#define O_STOP_AFTER (1ull << 31) /* the 32nd bit and beyond: outside an enum constant's int range */
#define O_PLAN       (1ull << 32)
#define O_LAYOUT     (1ull << 33)
enum { MAX_STOP = 8 };

/** Everything any command accepts, parsed; each command takes the options its entry lists. */
typedef struct {
    const char *cmd;            /* the command's name, for messages */
    unsigned long long given;   /* the O_* bits seen */
    const char *model_dir;      /* -m */
    const char *ids;            /* --ids 1,2,3 */
    const char *prompt;         /* -p (or the text of -f FILE / -p -, read by read_prompt) */
    const char *prompt_file;    /* -f */
    char *prompt_buf;           /* what read_prompt() read (owned) */
    const char *output;         /* -o */
    long n_tokens;              /* -n */
    double temperature;         /* -t */
    double top_p;               /* --top-p */
    long top_k;                 /* --top-k (0: all) */
    double repeat_penalty;      /* --repeat-penalty (1: none) */
    unsigned long long seed;    /* --seed, or drawn at start (printed) */
    const char *backend;        /* --backend ref | fast */
    const char *dtype;          /* --dtype f32 | bf16 (fast backend) */
    long ctx;                   /* --ctx (0: the model's default) */
    const char *system;         /* --system (chat) */
    const char *stop[MAX_STOP]; /* --stop, repeatable */
    int n_stop;
    long devices;          /* --devices D (route-stats; 0: the default) */
    long limit;            /* --limit M (route-stats; 0: what the model's routing implies) */
    const char *plot;      /* --plot FILE.png (route-stats) */
    double alpha[3];       /* --alpha A1,A2,A3 (route-stats, train): the balance-loss weights α₁, α₂, α₃ */
    const char *config;    /* -c CONFIG.json (train) */
    const char *data;      /* --data FILE (train) */
    const char *tokenizer; /* --tokenizer DIR (train) */
    long steps, batch, seq, warmup, eval_every, stop_after; /* train's counts (--batch: info --plan's too) */
    const char *plan;                                       /* --plan DEVICES[:GB] (info) */
    const char *layout;                                     /* --layout single | ep | dp (info --plan) */
    double lr, capacity;                                    /* --lr, --capacity (train) */
} Args;

/** One line "dsv2 CMD: <message> (see dsv2 CMD --help)" on stderr; returns the exit status 2. */
int usage_error(const Args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Reads -f FILE, or stdin for -p -, into a->prompt. Returns 0 or the exit status after one line. */
int read_prompt(Args *a);
/** The tokenizer of dir, or NULL after one line. */
Tokenizer *load_tokenizer(const char *dir);
/** Encodes text into *ids (malloc'd); the count, or −1 after one line. */
int encode_text(const Tokenizer *tok, const char *text, unsigned flags, int **ids);
/** The prompt's ids (--ids, or the text through tok) into *ids; the count (> 0), or −1 after one line. */
int prompt_ids(const Args *a, const Tokenizer *tok, int **ids);
/** read_prompt(), then the prompt's ids (through the model's tokenizer for a text prompt) into *ids and
 *  *n; the tokenizer (NULL for --ids) to *tok when tok is not NULL. Returns 0, or the exit status after one line. */
int read_prompt_ids(Args *a, Tokenizer **tok, int **ids, int *n);
/** 0, or −1 after one line naming the first of ids[0..n) outside [0, vocab). */
int check_vocab(const int *ids, int n, int vocab);
/** Flushes stdout: 0, or −1 after one line when anything written to it was lost. */
int flush_stdout(void);
/** Seconds since t0 (CLOCK_MONOTONIC). */
double seconds_since(const struct timespec *t0);

/** dsv2 generate, chat and logits (dsv2_generate.c): each returns the exit status. */
int cmd_generate(Args *a);
int cmd_chat(Args *a);
int cmd_logits(Args *a);
/** dsv2 train (dsv2_train.c). */
int cmd_train(Args *a);
/** The help text of dsv2 train. */
extern const char TRAIN_HELP[];

#endif
