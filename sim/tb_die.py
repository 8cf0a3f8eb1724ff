"""cocotb testbench of the die inside `sim.harness`: loads ROM images, writes registers, plays frames and waits.

Verilog players feed the pixel, tensor and ROM ports and a capture logs the CSI-2 beats, so this coroutine only
wakes every `poll` cycles. The plan comes from the JSON file named by STACKCAM_TB_PLAN (written by
`sim.dierun`): a list of steps {"rom": end_beat} | {"regs": [[addr, value], ...]} | {"frame": "pixels" or
"tensor", "end": end_beat} | {"fault": {"wait_index": beat, "delay": cycles, "id": sram, "addr": word, "bit": bit}}
(once the input port has taken `wait_index` beats, wait `delay` cycles and flip one bit of an SRAM through the
simulation build's fault-injection port, see sim.harness) | {"backpressure": {"stall": s, "pixels": g, "tensor": g,
"rom": g}} (from now on the CSI-2 receiver is not ready, and each input player withholds its beat, with these
probabilities out of 256). Register writes wait until every earlier frame has
been sent. The results (status
registers and per-descriptor counters read over the bus) go to the JSON file named by STACKCAM_TB_OUT.
"""

import json
import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, Timer

PERIOD_NS = 10


@cocotb.test()
async def run_plan(dut):
    with open(os.environ["STACKCAM_TB_PLAN"]) as f:
        plan = json.load(f)
    poll = int(plan.get("poll", 64))
    max_cycles = int(plan["max_cycles"])
    progress_path = os.environ.get("STACKCAM_TB_PROGRESS")
    clk = dut.clk
    cocotb.start_soon(Clock(clk, PERIOD_NS, unit="ns").start())
    for name in ("pixels_limit", "tensor_limit", "rom_limit", "bus__we", "bus__re", "flush", "fault_en", "fault_id",
                 "fault_addr", "fault_bit", "pixels_gap", "tensor_gap", "rom_gap"):
        getattr(dut, name).value = 0
    dut.stall.value = int(plan.get("stall", 0))
    # The harness registers `rst` (sim.harness), so it is deasserted one edge earlier than the die sees it: the
    # die is out of reset from the fourth rising edge on, and the plan starts after that edge.
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(clk)
    dut.rst.value = 0
    for _ in range(2):
        await RisingEdge(clk)

    state = {"timeout": False}
    # (what, cycle, wall-clock seconds, CPU seconds of this simulator process) at the start, after each ROM load
    # and at the end: the simulation speed of each phase (the frame alone, without the process start and the model
    # load), by the wall clock and by the CPU time the simulator got (on a shared machine the two differ).
    def mark(what):
        return (what, cycle(), time.monotonic(), time.process_time())

    def cycle():
        return int(dut.cycle.value)

    marks = [mark("start")]

    last_progress = [0.0]

    async def wait_until(cond, what):
        while not cond():
            if cycle() > max_cycles:
                state["timeout"] = what
                return False
            if progress_path and time.monotonic() - last_progress[0] > 0.5:
                last_progress[0] = time.monotonic()
                with open(progress_path, "w") as f:
                    f.write(f"{cycle()} {int(dut.pixels_index.value)} {int(dut.tensor_index.value)} "
                            f"{int(dut.rom_index.value)} {int(dut.csi2_count.value)} {int(dut.frames_sent.value)}\n")
            await Timer(poll * PERIOD_NS, unit="ns")
        return True

    async def bus_write(addr, value):
        await RisingEdge(clk)
        dut.bus__addr.value = addr
        dut.bus__wdata.value = value & 0xFFFFFFFF
        dut.bus__we.value = 1
        await RisingEdge(clk)
        dut.bus__we.value = 0

    async def bus_read(addr):
        await RisingEdge(clk)
        dut.bus__addr.value = addr
        dut.bus__re.value = 1
        await RisingEdge(clk)
        dut.bus__re.value = 0
        await RisingEdge(clk)
        return int(dut.bus__rdata.value)

    frames = 0
    loads = []
    faults = []
    ok = True
    stall_max = int(plan.get("stall", 0))
    for step in plan["steps"]:
        if "backpressure" in step:
            bp = step["backpressure"]
            await RisingEdge(clk)
            dut.stall.value = int(bp.get("stall", 0))
            stall_max = max(stall_max, int(bp.get("stall", 0)))
            for port in ("pixels", "tensor", "rom"):
                getattr(dut, f"{port}_gap").value = int(bp.get(port, 0))
        elif "fault" in step:
            f = step["fault"]
            port = "tensor_index" if plan.get("port") == "tensor" else "pixels_index"
            ok = await wait_until(lambda i=int(f["wait_index"]), p=port: int(getattr(dut, p).value) >= i,
                                  "the frame before a fault")
            if not ok:
                break
            if int(f["delay"]):
                await Timer(int(f["delay"]) * PERIOD_NS, unit="ns")
            await RisingEdge(clk)
            dut.fault_id.value = int(f["id"])
            dut.fault_addr.value = int(f["addr"])
            dut.fault_bit.value = int(f["bit"])
            dut.fault_en.value = 1
            await RisingEdge(clk)           # the flip happens at this edge
            dut.fault_en.value = 0
            faults.append({"cycle": cycle(), "frames_sent": int(dut.frames_sent.value)})
        elif "rom" in step:
            # A new model only once every frame before it is out (a model is not swapped under a frame).
            ok = await wait_until(lambda n=frames: int(dut.frames_sent.value) >= n, "frames before a ROM load")
            if not ok:
                break
            end = int(step["rom"])
            start = cycle()
            dut.rom_limit.value = end
            ok = await wait_until(lambda end=end: int(dut.rom_index.value) >= end and not int(dut.loading.value),
                                  "rom")
            await Timer(4 * PERIOD_NS, unit="ns")
            loads.append({"model_ok": int(dut.model_ok.value), "cycles": cycle() - start,
                          "npu_status": await bus_read(plan["reg_npu_status"]),
                          "load_cycles": await bus_read(plan["reg_load_cycles"])})
            marks.append(mark("rom_loaded"))
        elif "regs" in step:
            if step.get("wait", True):
                ok = await wait_until(lambda n=frames: int(dut.frames_sent.value) >= n,
                                      "frames before a register write")
            elif "wait_index" in step:
                port = "tensor_index" if plan.get("port") == "tensor" else "pixels_index"
                ok = await wait_until(lambda i=int(step["wait_index"]), p=port: int(getattr(dut, p).value) >= i,
                                      "the previous frame's beats")
            for addr, value in step["regs"]:
                await bus_write(int(addr), int(value))
        else:
            getattr(dut, f"{step['frame']}_limit").value = int(step["end"])
            frames += 1
        if not ok:
            break
    if ok:
        ok = await wait_until(lambda: int(dut.frames_sent.value) >= frames, "frames")
    # The last FE leaves after the sequencer counts it, as fast as the PHY takes it: wait until no CSI-2 beat
    # has come for 16 times the mean wait of a stalled PHY (stall/256 per cycle), so a slow PHY is not cut off.
    quiet = 64 + 16 * 256 // max(1, 256 - stall_max)
    last, since = int(dut.csi2_count.value), cycle()
    while cycle() - since < quiet and cycle() <= max_cycles:
        await Timer(16 * PERIOD_NS, unit="ns")
        now = int(dut.csi2_count.value)
        if now != last:
            last, since = now, cycle()
    marks.append(mark("end"))

    result = {"marks": marks, "cycles": cycle(), "finished": bool(ok), "timeout": state["timeout"], "loads": loads,
              "faults": faults,
              "frames_sent": int(dut.frames_sent.value), "frame_errors": int(dut.frame_errors.value),
              "csi2_errors": int(dut.csi2_errors.value), "npu_cycles": int(dut.npu_cycles.value),
              "mac_cycles": int(dut.mac_cycles.value), "model_ok": int(dut.model_ok.value),
              "pixels_sent": int(dut.pixels_index.value), "tensor_sent": int(dut.tensor_index.value)}
    regs = plan["regs_to_read"]
    for name, addr in regs.items():
        result[name] = await bus_read(addr)
    descriptors = min(result.get("npu_descriptors", 0), int(plan.get("max_counters", 512)))
    counters = []
    activity = []
    for i in range(descriptors):
        await bus_write(plan["reg_counter_sel"], i)
        await RisingEdge(clk)
        counters.append((await bus_read(plan["reg_counter_cycles"]), await bus_read(plan["reg_counter_macs"])))
        activity.append({k: await bus_read(plan[f"reg_counter_{k}"])
                         for k in ("act_reads", "act_write_bytes", "weight_reads")})
    result["descriptor_counters"] = counters
    result["descriptor_activity"] = activity
    banks = {}
    for kind, (name, n) in enumerate(plan.get("bank_counters", ())):
        values = []
        for b in range(int(n)):
            await bus_write(plan["reg_bank_sel"], kind << 8 | b)
            await RisingEdge(clk)
            values.append(await bus_read(plan["reg_bank_counter"]))
        banks[name] = values
    result["bank_counters"] = banks
    dut.flush.value = 1
    await RisingEdge(clk)
    dut.flush.value = 0
    await RisingEdge(clk)
    with open(os.environ["STACKCAM_TB_OUT"], "w") as f:
        json.dump(result, f)
    assert ok, f"die did not finish: waiting for {state['timeout']} after {cycle()} cycles"
