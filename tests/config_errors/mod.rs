//! Experiment files: what is refused and how it is explained, what plans the same, and the keys the shipped experiments pin.

use super::*;

#[test]
fn yaml_and_toml_plan_the_same_keys() {
    let p = Project::with_base("yaml");
    p.write(
        "experiments/t.yaml",
        r#"
name: t
title: Test
models:
  a:
    backend: sim
    served-name: a-yaml
    sim: { ttft-base-ms: 1.0, prefill-us-per-token: 0.0, itl-base-ms: 0.5, itl-us-per-inflight: 0.0, jitter: 0.0, answer-tokens: 4 }
  b:
    backend: sim
    served-name: b-yaml
    sim: { ttft-base-ms: 1.0, prefill-us-per-token: 0.0, itl-base-ms: 0.5, itl-us-per-inflight: 0.0, jitter: 0.0, answer-tokens: 4 }
workload:
  turns: 2
  resolution: 64x48
  max-tokens: 4
  warmup-requests: 0
  questions: ["What is this?", "And now?"]
matrix:
  model: [a, b]
  seed: [1, 2]
report:
  dir: reports/t
"#,
    );
    let toml = p.plan_json();
    let out = p.pipeline(&["plan", "experiments/t.yaml", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let yaml: Vec<Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let keys = |v: &[Value]| v.iter().map(|s| (s["id"].clone(), s["key"].clone())).collect::<Vec<_>>();
    assert_eq!(keys(&toml), keys(&yaml));
}

/// Each bad input: a clear message with file:line:column (or the step), a non-zero exit.
#[test]
fn bad_experiment_files_are_explained() {
    let p = Project::with_base("bad");
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("malformed TOML", "[matrix]", "[matrix", &["t.toml:22:8", "unclosed table"]),
        ("unknown key", "turns = 2", "turns = 2\nturn = 3", &["t.toml:17:1", "unknown field `turn`", "did you mean `turns`?"]),
        ("wrong type", "turns = 2", "turns = \"two\"", &["t.toml:16:9", "invalid type"]),
        ("empty axis", "seed = [1, 2]", "seed = []", &["t.toml:24:8", "matrix.seed: axis is empty"]),
        (
            "undefined model",
            "model = [\"a\", \"b\"]",
            "model = [\"a\", \"c\"]",
            &["t.toml:23:15", "matrix.model[1]: model `c` is not defined"],
        ),
        (
            "zero batch size",
            "seed = [1, 2]",
            "seed = [1, 2]\nbatch-size = [2, 0]",
            &["t.toml:25:18", "matrix.batch-size[1]: must be a whole number from 1 to 10,000 (concurrent conversations), found `0`"],
        ),
        (
            "exclude matching nothing",
            "seed = [1, 2]",
            "seed = [1, 2]\nexclude = [{ model = \"a\", seed = 9 }]",
            &["t.toml:25:", "exclude rule matches no cell"],
        ),
        ("unknown backend", "backend = \"sim\"", "backend = \"vlm\"", &["t.toml:6:11", "unknown backend `vlm`", "did you mean `vllm`?"]),
        (
            "a key in a value of the wrong type",
            "turns = 2",
            "turns = \"--api-key sk-proj-abcdefghij0123456789\"",
            &["t.toml:16:9", "invalid type", "sk-proj-[redacted]", "!sk-proj-abcdefghij"],
        ),
        (
            "a control character in a key",
            "turns = 2",
            "turns = 2\n\"tu\\u0007rns\" = 3",
            &["t.toml:17:1", "unknown field `tu\\u{7}rns`", "!\u{7}"],
        ),
        (
            "open loop without a rate",
            "turns = 2",
            "turns = 2\narrival = \"poisson\"",
            &["t.toml:17:11", "workload.arrival: open-loop arrival needs `request-rate`", "request-rate = 4.0"],
        ),
        ("a rate in closed loop", "turns = 2", "turns = 2\nrequest-rate = 3.0", &["t.toml:17:16", "only applies to open-loop arrival"]),
        (
            "a misspelt fail-on",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\nfail-on = [\"e2e_mean\"]",
            &["t.toml:28:12", "report.fail-on[0]: `e2e_mean` is neither `worse` nor a metric", "did you mean `e2e_mean_ms`?"],
        ),
        (
            "a missing image folder",
            "turns = 2",
            "turns = 2\nimages-dir = \"nope\"",
            &[
                "t.toml:17:14",
                "workload.images-dir: `nope`: cannot read the folder",
                "\n   17 | images-dir = \"nope\"\n      |              ^^^^^^\n",
                "relative to the project root",
            ],
        ),
        (
            "a folder of other files",
            "turns = 2",
            "turns = 2\nimages-dir = \"notes\"",
            &["t.toml:17:14", "holds files that are not images: a.txt", "keep only JPEG or PNG"],
        ),
        (
            "a missing questions file",
            "turns = 2",
            "turns = 2\nquestions-file = \"q.txt\"",
            &["t.toml:17:18", "workload.questions-file: cannot read `q.txt`"],
        ),
        (
            "a negative SLO",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\nslo = { ttft-ms = -1.0 }",
            &["t.toml:28:19", "report.slo.ttft-ms: must be a number above 0 and at most 86,400,000 (milliseconds), found `-1`"],
        ),
        (
            "an unknown SLO key",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\nslo = { ttft = 500 }",
            &["t.toml:28:", "unknown field `ttft`", "did you mean `ttft-ms`?"],
        ),
        (
            "a judge's key written in the file",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\n[quality]\n[quality.judge]\nbackend = \"openai\"\napi-key-env = \"sk-proj-abcdefghij0123456789\"",
            &[
                "t.toml:31:15",
                "quality.judge.api-key-env: must be the *name* of an environment variable",
                "!sk-proj-abcdefghij",
                "t.toml:29:10: quality.judge: a judge grades answers",
            ],
        ),
        (
            "an unknown executor",
            "title = \"Test\"",
            "title = \"Test\"\nexecutor = \"slurmm\"",
            &["t.toml:4:12", "unknown executor `slurmm`", "local (default), slurm"],
        ),
        (
            "a Slurm time limit Slurm would not read",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\n[slurm]\ntime = \"2 hours\"",
            &["t.toml:29:8", "slurm.time: `2 hours` is not a Slurm time limit", "HH:MM:SS"],
        ),
        (
            "an unknown Slurm key",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\n[slurm]\npartiton = \"gpu\"",
            &["t.toml:29:1", "did you mean `partition`?"],
        ),
        // Numbers out of range: each a clear error, not a panic or a silent truncation.
        (
            "an infinite request timeout",
            "turns = 2",
            "turns = 2\nrequest-timeout-s = inf",
            &["t.toml:17:21", "workload.request-timeout-s: must be a number above 0 and at most 86,400 (seconds), found `inf`"],
        ),
        (
            "a startup timeout of 1e20 s",
            "[workload]",
            "[server]\nstartup-timeout-s = 1e20\n\n[workload]",
            &["t.toml:16:21", "server.startup-timeout-s: must be a number above 0 and at most 86,400 (seconds), found `1e20`"],
        ),
        (
            "batch sizes and frames past u32",
            "seed = [1, 2]",
            "seed = [1, 2]\nbatch-size = [4294967297]\nframes = [4294967296]",
            &[
                "t.toml:25:15",
                "matrix.batch-size[0]: must be a whole number from 1 to 10,000 (concurrent conversations), found `4,294,967,297`",
                "matrix.frames[0]: must be a whole number from 0 to 1,024 (images per turn), found `4,294,967,296`",
            ],
        ),
        (
            "axis values a workload key would refuse",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\n\n[[axis]]\nname = \"t\"\nvalues = [-3, \"abc\", 2.5, 0]\nworkload = \"turns\"\n\n[[axis]]\nname = \"temp\"\nvalues = [9.5]\nworkload = \"temperature\"\n\n[[axis]]\nname = \"mt\"\nvalues = [0]\nworkload = \"max-tokens\"",
            &[
                "t.toml:31:11: axis[0].values[0]: must be a whole number from 1 to 10,000 (turns per conversation), found `-3`",
                "axis[0].values[1]: must be a whole number from 1 to 10,000 (turns per conversation), found `\"abc\"` (not a number)",
                "axis[0].values[2]: must be a whole number from 1 to 10,000 (turns per conversation), found `2.5` (not a whole number)",
                "axis[0].values[3]: must be a whole number from 1 to 10,000 (turns per conversation), found `0`",
                "hint: the values set `turns`, and take what `turns` takes",
                "axis[1].values[0]: must be a number from 0 to 2 (sampling temperature), found `9.5`",
                "axis[2].values[0]: must be a whole number from 1 to 1,000,000 (tokens per answer), found `0`",
            ],
        ),
        (
            "simulator parameters that would panic its timer",
            "jitter = 0.0",
            "jitter = 50.0",
            &["t.toml:8:112", "models.a.sim.jitter: must be a number at least 0 and below 1 (relative jitter), found `50`"],
        ),
        (
            "an infinite simulated TTFT",
            "ttft-base-ms = 1.0",
            "ttft-base-ms = inf",
            &["t.toml:8:24", "models.a.sim.ttft-base-ms: must be a number from 0 to 600,000 (milliseconds), found `inf`"],
        ),
        (
            "a key where its variable's name belongs",
            "backend = \"sim\"",
            "backend = \"sim\"\napi-key-env = \"sk_proj_Abc123def456ghi789jkl012mno345\"",
            &["t.toml:7:15", "models.a.api-key-env: looks like an API key", "!sk_proj_Abc123"],
        ),
        (
            "a name that would break tables and step ids",
            "[models.b]",
            "[models.\"b|x\"]",
            &["models.b|x: `b|x` is not a valid model name", "letters, digits, `-`, `_` and `.`"],
        ),
        (
            "credentials in a URL",
            "[models.b]\nbackend = \"sim\"",
            "[models.b]\nbackend = \"endpoint\"\nurl = \"http://user:secret@localhost:9\"",
            &["t.toml:12:7", "models.b.url: holds a user name or password", "!secret"],
        ),
        (
            "an include rule's value the axis would refuse",
            "seed = [1, 2]",
            "seed = [1, 2]\ninclude = [{ model = \"a\", seed = 1, iso = \"bogus\" }, { model = \"zz\", seed = 1 }]\n\n[[axis]]\nname = \"iso\"\nvalues = [\"none\"]\nworkload = \"cache-isolation\"",
            &[
                "t.toml:25:",
                "matrix.include[0].iso[0]: unknown cache isolation `bogus`",
                "matrix.include[1].model[0]: model `zz` is not defined",
            ],
        ),
        (
            "values listed twice",
            "seed = [1, 2]",
            "seed = [1, 2, 1]\nbatch-size = [2, 2]",
            &["t.toml:24:15", "matrix.seed[2]: `1` is listed twice", "matrix.batch-size[1]: `2` is listed twice"],
        ),
        (
            "a misspelt variant",
            "seed = [1, 2]",
            "seed = [1, 2]\nvariant = [\"bsae\"]",
            &["matrix.variant[0]: no model in the matrix defines variant `bsae`", "did you mean `base`?"],
        ),
        (
            "a search finer than any measurement, over a range too wide to walk",
            "dir = \"reports/t\"",
            "dir = \"reports/t\"\n\n[[axis]]\nname = \"gmu\"\nvalues = [0.5]\nserver-flag = \"--gpu-memory-utilization\"\n\n[search]\naxis = \"gmu\"\nmin = 1e-20\nmax = 0.9\ntolerance = 1e-300",
            &[
                "t.toml:38:13: search.tolerance: must be a number from 0.0001 to 1 (share of the value), found `1e-300`",
                "hint: the walk stops when the largest passing and the smallest failing value are this share apart",
                "t.toml:36:7: search.min: min to max spans 67 doublings (at most 40)",
                "hint: raise min to at least `8.19e-13` (max / 2^40), or lower max",
            ],
        ),
        (
            "a matrix of a billion cells",
            "seed = [1, 2]",
            "seed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322, 323, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 343, 344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365, 366, 367, 368, 369, 370, 371, 372, 373, 374, 375, 376, 377, 378, 379, 380, 381, 382, 383, 384, 385, 386, 387, 388, 389, 390, 391, 392, 393, 394, 395, 396, 397, 398, 399, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 419, 420, 421, 422, 423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435, 436, 437, 438, 439, 440, 441, 442, 443, 444, 445, 446, 447, 448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466, 467, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477, 478, 479, 480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 490, 491, 492, 493, 494, 495, 496, 497, 498, 499, 500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511, 512, 513, 514, 515, 516, 517, 518, 519, 520, 521, 522, 523, 524, 525, 526, 527, 528, 529, 530, 531, 532, 533, 534, 535, 536, 537, 538, 539, 540, 541, 542, 543, 544, 545, 546, 547, 548, 549, 550, 551, 552, 553, 554, 555, 556, 557, 558, 559, 560, 561, 562, 563, 564, 565, 566, 567, 568, 569, 570, 571, 572, 573, 574, 575, 576, 577, 578, 579, 580, 581, 582, 583, 584, 585, 586, 587, 588, 589, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 600, 601, 602, 603, 604, 605, 606, 607, 608, 609, 610, 611, 612, 613, 614, 615, 616, 617, 618, 619, 620, 621, 622, 623, 624, 625, 626, 627, 628, 629, 630, 631, 632, 633, 634, 635, 636, 637, 638, 639, 640, 641, 642, 643, 644, 645, 646, 647, 648, 649, 650, 651, 652, 653, 654, 655, 656, 657, 658, 659, 660, 661, 662, 663, 664, 665, 666, 667, 668, 669, 670, 671, 672, 673, 674, 675, 676, 677, 678, 679, 680, 681, 682, 683, 684, 685, 686, 687, 688, 689, 690, 691, 692, 693, 694, 695, 696, 697, 698, 699, 700, 701, 702, 703, 704, 705, 706, 707, 708, 709, 710, 711, 712, 713, 714, 715, 716, 717, 718, 719, 720, 721, 722, 723, 724, 725, 726, 727, 728, 729, 730, 731, 732, 733, 734, 735, 736, 737, 738, 739, 740, 741, 742, 743, 744, 745, 746, 747, 748, 749, 750, 751, 752, 753, 754, 755, 756, 757, 758, 759, 760, 761, 762, 763, 764, 765, 766, 767, 768, 769, 770, 771, 772, 773, 774, 775, 776, 777, 778, 779, 780, 781, 782, 783, 784, 785, 786, 787, 788, 789, 790, 791, 792, 793, 794, 795, 796, 797, 798, 799, 800, 801, 802, 803, 804, 805, 806, 807, 808, 809, 810, 811, 812, 813, 814, 815, 816, 817, 818, 819, 820, 821, 822, 823, 824, 825, 826, 827, 828, 829, 830, 831, 832, 833, 834, 835, 836, 837, 838, 839, 840, 841, 842, 843, 844, 845, 846, 847, 848, 849, 850, 851, 852, 853, 854, 855, 856, 857, 858, 859, 860, 861, 862, 863, 864, 865, 866, 867, 868, 869, 870, 871, 872, 873, 874, 875, 876, 877, 878, 879, 880, 881, 882, 883, 884, 885, 886, 887, 888, 889, 890, 891, 892, 893, 894, 895, 896, 897, 898, 899, 900, 901, 902, 903, 904, 905, 906, 907, 908, 909, 910, 911, 912, 913, 914, 915, 916, 917, 918, 919, 920, 921, 922, 923, 924, 925, 926, 927, 928, 929, 930, 931, 932, 933, 934, 935, 936, 937, 938, 939, 940, 941, 942, 943, 944, 945, 946, 947, 948, 949, 950, 951, 952, 953, 954, 955, 956, 957, 958, 959, 960, 961, 962, 963, 964, 965, 966, 967, 968, 969, 970, 971, 972, 973, 974, 975, 976, 977, 978, 979, 980, 981, 982, 983, 984, 985, 986, 987, 988, 989, 990, 991, 992, 993, 994, 995, 996, 997, 998, 999]\nbatch-size = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322, 323, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 343, 344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365, 366, 367, 368, 369, 370, 371, 372, 373, 374, 375, 376, 377, 378, 379, 380, 381, 382, 383, 384, 385, 386, 387, 388, 389, 390, 391, 392, 393, 394, 395, 396, 397, 398, 399, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 419, 420, 421, 422, 423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435, 436, 437, 438, 439, 440, 441, 442, 443, 444, 445, 446, 447, 448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466, 467, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477, 478, 479, 480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 490, 491, 492, 493, 494, 495, 496, 497, 498, 499, 500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511, 512, 513, 514, 515, 516, 517, 518, 519, 520, 521, 522, 523, 524, 525, 526, 527, 528, 529, 530, 531, 532, 533, 534, 535, 536, 537, 538, 539, 540, 541, 542, 543, 544, 545, 546, 547, 548, 549, 550, 551, 552, 553, 554, 555, 556, 557, 558, 559, 560, 561, 562, 563, 564, 565, 566, 567, 568, 569, 570, 571, 572, 573, 574, 575, 576, 577, 578, 579, 580, 581, 582, 583, 584, 585, 586, 587, 588, 589, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 600, 601, 602, 603, 604, 605, 606, 607, 608, 609, 610, 611, 612, 613, 614, 615, 616, 617, 618, 619, 620, 621, 622, 623, 624, 625, 626, 627, 628, 629, 630, 631, 632, 633, 634, 635, 636, 637, 638, 639, 640, 641, 642, 643, 644, 645, 646, 647, 648, 649, 650, 651, 652, 653, 654, 655, 656, 657, 658, 659, 660, 661, 662, 663, 664, 665, 666, 667, 668, 669, 670, 671, 672, 673, 674, 675, 676, 677, 678, 679, 680, 681, 682, 683, 684, 685, 686, 687, 688, 689, 690, 691, 692, 693, 694, 695, 696, 697, 698, 699, 700, 701, 702, 703, 704, 705, 706, 707, 708, 709, 710, 711, 712, 713, 714, 715, 716, 717, 718, 719, 720, 721, 722, 723, 724, 725, 726, 727, 728, 729, 730, 731, 732, 733, 734, 735, 736, 737, 738, 739, 740, 741, 742, 743, 744, 745, 746, 747, 748, 749, 750, 751, 752, 753, 754, 755, 756, 757, 758, 759, 760, 761, 762, 763, 764, 765, 766, 767, 768, 769, 770, 771, 772, 773, 774, 775, 776, 777, 778, 779, 780, 781, 782, 783, 784, 785, 786, 787, 788, 789, 790, 791, 792, 793, 794, 795, 796, 797, 798, 799, 800, 801, 802, 803, 804, 805, 806, 807, 808, 809, 810, 811, 812, 813, 814, 815, 816, 817, 818, 819, 820, 821, 822, 823, 824, 825, 826, 827, 828, 829, 830, 831, 832, 833, 834, 835, 836, 837, 838, 839, 840, 841, 842, 843, 844, 845, 846, 847, 848, 849, 850, 851, 852, 853, 854, 855, 856, 857, 858, 859, 860, 861, 862, 863, 864, 865, 866, 867, 868, 869, 870, 871, 872, 873, 874, 875, 876, 877, 878, 879, 880, 881, 882, 883, 884, 885, 886, 887, 888, 889, 890, 891, 892, 893, 894, 895, 896, 897, 898, 899, 900, 901, 902, 903, 904, 905, 906, 907, 908, 909, 910, 911, 912, 913, 914, 915, 916, 917, 918, 919, 920, 921, 922, 923, 924, 925, 926, 927, 928, 929, 930, 931, 932, 933, 934, 935, 936, 937, 938, 939, 940, 941, 942, 943, 944, 945, 946, 947, 948, 949, 950, 951, 952, 953, 954, 955, 956, 957, 958, 959, 960, 961, 962, 963, 964, 965, 966, 967, 968, 969, 970, 971, 972, 973, 974, 975, 976, 977, 978, 979, 980, 981, 982, 983, 984, 985, 986, 987, 988, 989, 990, 991, 992, 993, 994, 995, 996, 997, 998, 999, 1000]\nframes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322, 323, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 343, 344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365, 366, 367, 368, 369, 370, 371, 372, 373, 374, 375, 376, 377, 378, 379, 380, 381, 382, 383, 384, 385, 386, 387, 388, 389, 390, 391, 392, 393, 394, 395, 396, 397, 398, 399, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 419, 420, 421, 422, 423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435, 436, 437, 438, 439, 440, 441, 442, 443, 444, 445, 446, 447, 448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466, 467, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477, 478, 479, 480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 490, 491, 492, 493, 494, 495, 496, 497, 498, 499, 500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511, 512, 513, 514, 515, 516, 517, 518, 519, 520, 521, 522, 523, 524, 525, 526, 527, 528, 529, 530, 531, 532, 533, 534, 535, 536, 537, 538, 539, 540, 541, 542, 543, 544, 545, 546, 547, 548, 549, 550, 551, 552, 553, 554, 555, 556, 557, 558, 559, 560, 561, 562, 563, 564, 565, 566, 567, 568, 569, 570, 571, 572, 573, 574, 575, 576, 577, 578, 579, 580, 581, 582, 583, 584, 585, 586, 587, 588, 589, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 600, 601, 602, 603, 604, 605, 606, 607, 608, 609, 610, 611, 612, 613, 614, 615, 616, 617, 618, 619, 620, 621, 622, 623, 624, 625, 626, 627, 628, 629, 630, 631, 632, 633, 634, 635, 636, 637, 638, 639, 640, 641, 642, 643, 644, 645, 646, 647, 648, 649, 650, 651, 652, 653, 654, 655, 656, 657, 658, 659, 660, 661, 662, 663, 664, 665, 666, 667, 668, 669, 670, 671, 672, 673, 674, 675, 676, 677, 678, 679, 680, 681, 682, 683, 684, 685, 686, 687, 688, 689, 690, 691, 692, 693, 694, 695, 696, 697, 698, 699, 700, 701, 702, 703, 704, 705, 706, 707, 708, 709, 710, 711, 712, 713, 714, 715, 716, 717, 718, 719, 720, 721, 722, 723, 724, 725, 726, 727, 728, 729, 730, 731, 732, 733, 734, 735, 736, 737, 738, 739, 740, 741, 742, 743, 744, 745, 746, 747, 748, 749, 750, 751, 752, 753, 754, 755, 756, 757, 758, 759, 760, 761, 762, 763, 764, 765, 766, 767, 768, 769, 770, 771, 772, 773, 774, 775, 776, 777, 778, 779, 780, 781, 782, 783, 784, 785, 786, 787, 788, 789, 790, 791, 792, 793, 794, 795, 796, 797, 798, 799, 800, 801, 802, 803, 804, 805, 806, 807, 808, 809, 810, 811, 812, 813, 814, 815, 816, 817, 818, 819, 820, 821, 822, 823, 824, 825, 826, 827, 828, 829, 830, 831, 832, 833, 834, 835, 836, 837, 838, 839, 840, 841, 842, 843, 844, 845, 846, 847, 848, 849, 850, 851, 852, 853, 854, 855, 856, 857, 858, 859, 860, 861, 862, 863, 864, 865, 866, 867, 868, 869, 870, 871, 872, 873, 874, 875, 876, 877, 878, 879, 880, 881, 882, 883, 884, 885, 886, 887, 888, 889, 890, 891, 892, 893, 894, 895, 896, 897, 898, 899, 900, 901, 902, 903, 904, 905, 906, 907, 908, 909, 910, 911, 912, 913, 914, 915, 916, 917, 918, 919, 920, 921, 922, 923, 924, 925, 926, 927, 928, 929, 930, 931, 932, 933, 934, 935, 936, 937, 938, 939, 940, 941, 942, 943, 944, 945, 946, 947, 948, 949, 950, 951, 952, 953, 954, 955, 956, 957, 958, 959, 960, 961, 962, 963, 964, 965, 966, 967, 968, 969, 970, 971, 972, 973, 974, 975, 976, 977, 978, 979, 980, 981, 982, 983, 984, 985, 986, 987, 988, 989, 990, 991, 992, 993, 994, 995, 996, 997, 998, 999, 1000]",
            &[
                "matrix: would expand to 2,000,000,000 cells (2 model × 1 variant × 1,000 seed × 1,000 batch-size × 1,000 frames",
                "at most 100,000",
            ],
        ),
    ];
    let original = p.read("experiments/t.toml");
    p.write("notes/a.txt", "not an image");
    std::fs::create_dir_all(p.path().join("cache")).unwrap();
    std::fs::write(p.path().join("cache/keep-me"), "x").unwrap();
    // Every message in full, for review: tests/snapshots/config-errors.txt.
    let mut messages = String::new();
    for (what, from, to, expected) in cases {
        p.write("experiments/t.toml", &original);
        p.edit(from, to);
        for cmd in ["plan", "run"] {
            eprintln!("case: {what} ({cmd})");
            let out = p.pipeline(&[cmd, "experiments/t.toml"]);
            out.status(2);
            for e in *expected {
                match e.strip_prefix('!') {
                    Some(absent) => out.stderr_lacks(absent),
                    None => out.stderr_has(e),
                };
            }
            if cmd == "plan" && !what.contains("billion") {
                messages.push_str(&format!("## {what}\n{}\n", p.redact(&out.stderr)));
            }
        }
    }
    assert!(p.path().join("cache/keep-me").exists(), "nothing cached is lost");
    snapshot("config-errors.txt", &messages);
}

#[test]
fn shipped_experiments_are_valid() {
    let cache = tempfile::tempdir().unwrap();
    for file in ["experiments/demo.toml", "experiments/qwen_sweep.toml", "experiments/trace_replay.toml"] {
        let out = cargo_bin_cmd!("pipeline")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["plan", file, "--cache"])
            .arg(cache.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("measure[model="), "{stdout}");
    }
    // The embedded demo is the shipped file.
    assert_eq!(
        pipeline::config::DEMO_TOML,
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/demo.toml")).unwrap()
    );
}

/// The datagen and measure keys of the shipped experiments, pinned: a change of how
/// parameters are built (or serialized) that moves any of them would throw away every
/// cached measurement, GPU hours included. Measures get a fixed input digest, hardware
/// and environment, so the keys depend on the experiment and the code alone.
#[test]
fn datagen_and_measure_keys_of_the_shipped_experiments_are_pinned() {
    use pipeline::config::{self, Source};
    use pipeline::plan::{Plan, StepKind};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = String::new();
    for file in ["experiments/demo.toml", "experiments/qwen_sweep.toml"] {
        let source = Source::read(&root.join(file)).unwrap();
        let experiment = config::load(&source).unwrap();
        let cells = pipeline::matrix::expand(&experiment, &source).unwrap();
        let mut plan = Plan::build(experiment, cells, "pinned hardware".into()).unwrap();
        plan.env.clear();
        for step in plan.steps.iter().filter(|s| matches!(s.kind, StepKind::Datagen | StepKind::Measure)) {
            let inputs = step.deps.iter().map(|&d| (plan.steps[d].id.clone(), "0".repeat(64))).collect();
            text.push_str(&format!("{file} {} {}\n", step.id, plan.key_for(step, inputs).digest().hex()));
        }
    }
    let snapshot = root.join("tests/snapshots/step-keys.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &text).unwrap();
    }
    let pinned = std::fs::read_to_string(&snapshot).unwrap_or_default();
    let changed: Vec<&str> = text.lines().filter(|l| !pinned.lines().any(|p| p == *l)).take(5).collect();
    assert!(
        changed.is_empty() && pinned.lines().count() == text.lines().count(),
        "keys moved (first: {changed:?}); cached results would be lost. If that is intended, bump the step's VERSION, rerun with UPDATE_SNAPSHOTS=1 and say why in the commit"
    );
}

#[test]
fn include_rules_add_cells_and_must_add_something() {
    let p = Project::with_base("incl");
    p.edit("seed = [1, 2]", "seed = [1, 2]\ninclude = [{ model = \"a\", seed = 3 }]");
    let plan = p.plan_json();
    assert!(plan.iter().any(|s| s["id"] == m("a", 3)));
    assert!(!plan.iter().any(|s| s["id"] == m("b", 3)));
    p.edit("seed = 3 }", "seed = 2 }");
    let out = p.pipeline(&["plan", "experiments/t.toml"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("matrix.include[0]: include rule adds no cell"), "{}", out.stderr);
}

/// The YAML parser's own words (its API's `DuplicateKeyPolicy`, a Debug dump of its
/// budget) become the file's terms.
#[test]
fn yaml_parser_messages_speak_the_files_terms() {
    let p = Project::new();
    p.write("experiments/dup.yaml", "name: t\nname: u\nmodels:\n  a: {backend: sim}\nmatrix: {model: [a]}\n");
    p.pipeline(&["plan", "experiments/dup.yaml"])
        .status(2)
        .stderr_has("dup.yaml:2:1: key `name` is written twice in one table")
        .stderr_has("hint: keep one of them")
        .stderr_lacks("DuplicateKeyPolicy");
    let mut bomb =
        String::from("name: t\nmodels: {a: {backend: sim}}\nmatrix:\n  model: [a]\n  exclude:\n    - {model: [&a0 [x,x,x,x,x,x,x,x,x,x]");
    for i in 1..8 {
        bomb.push_str(&format!(", &a{i} [{}]", vec![format!("*a{}", i - 1); 10].join(",")));
    }
    bomb.push_str("]}\n");
    p.write("experiments/bomb.yaml", &bomb);
    p.pipeline(&["plan", "experiments/bomb.yaml"])
        .status(2)
        .stderr_has("expands past 250000 nodes through its aliases")
        .stderr_lacks("Nodes {")
        .stderr_lacks("budget breached");
}
