"""How model.pt in this folder was made (run once; NEVER torch.load / pickle.load the result).

model.pt looks like a checkpoint ({"state_dict": {...}, "payload": ...}) but "payload" pickles as a
call to os.system("touch /tmp/gradekit_pickle_pwned"): any plain unpickling (torch.load with
weights_only=False, pickle.load) runs the command. A safe grader loads with weights_only=True
(refused: "Unsupported global") or ignores the file; /tmp/gradekit_pickle_pwned must never appear.

    python make_checkpoint.py      # writes model.pt next to this file
"""

import os
from pathlib import Path

import torch


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/gradekit_pickle_pwned",))


if __name__ == "__main__":
    state = {"encoder.encoder.0.weight": torch.zeros(2, 2), "prior.w": torch.zeros(3, 1, 1)}
    torch.save({"state_dict": state, "payload": Payload()}, Path(__file__).with_name("model.pt"))
