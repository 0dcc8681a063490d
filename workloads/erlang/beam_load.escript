#!/usr/bin/env escript
%% -*- erlang -*-
%% A real Erlang/OTP service under open-loop load, for the lab (run by `beam-real`, which sets the
%% emulator flags through ERL_FLAGS: +S, +sbt, +sbwt).
%%
%%   calibrate REDUCTIONS OUT          time one request's work alone, write {"service_us": ...}
%%   run RATE SECS WARMUP DRAIN REDUCTIONS GENERATORS OUT
%%
%% `run`: GENERATORS processes (bound one per scheduler in turn) share RATE requests/s; each
%% request is a new process (as a
%% service spawns one per request or connection) doing REDUCTIONS function calls, so the BEAM's
%% own balancing (spawn on the spawner's scheduler, work stealing that needs the victim
%% scheduler to run) moves the work. Latency runs from the request's intended start (start time
%% plus i/rate: no coordinated omission; a late generator is counted as latency) to its end.
%% Requests intended in the first WARMUP seconds are not measured; after SECS the generators
%% stop and the run waits up to DRAIN seconds for measured requests still running, then counts
%% those as unfinished with their age (a lower bound). Output: one JSON object, each latency
%% with its intended start (µs into the measured window) in `starts_us`.
-mode(compile).

main(["calibrate", RedS, Out]) ->
    Red = list_to_integer(RedS),
    work(Red),
    Samples = lists:sort([time_us(fun() -> work(Red) end) || _ <- lists:seq(1, 31)]),
    Median = lists:nth(16, Samples),
    ok = file:write_file(Out, io_lib:format("{\"service_us\": ~w, \"reductions\": ~w}~n",
                                            [Median, Red])),
    halt(0);
main(["run", RateS, SecsS, WarmS, DrainS, RedS, GenS, Out]) ->
    Rate = num(RateS), Secs = num(SecsS), Warm = num(WarmS), Drain = num(DrainS),
    Red = list_to_integer(RedS), Gens = list_to_integer(GenS),
    true = Rate > 0 andalso Secs > 0 andalso Gens > 0,
    Self = self(),
    Collector = spawn_link(fun() -> collector(Self, []) end),
    Counters = counters:new(3, [write_concurrency]), % 1 issued, 2 measured, 3 finished
    Start = now_us() + 200000,
    MeasureFrom = Start + round(Warm * 1.0e6),
    End = MeasureFrom + round(Secs * 1.0e6),
    Interval = 1.0e6 * Gens / Rate,
    Req = fun(Intended) ->
                  counters:add(Counters, 1, 1),
                  Measured = Intended >= MeasureFrom,
                  Measured andalso counters:add(Counters, 2, 1),
                  spawn(fun() ->
                                work(Red),
                                case Measured of
                                    true ->
                                        counters:add(Counters, 3, 1),
                                        Collector ! {lat, Intended - MeasureFrom, now_us() - Intended};
                                    false -> ok
                                end
                        end)
          end,
    %% Generators are bound one per scheduler in turn, as a service's acceptors are spread over
    %% them; the requests they spawn start on that scheduler and may be stolen from there.
    NSched = erlang:system_info(schedulers_online),
    Gs = [spawn_opt(fun() ->
                            generator(Req, Start + round(I * Interval / Gens), 0, Interval, End,
                                      Self)
                    end, [link, {scheduler, (I rem NSched) + 1}]) || I <- lists:seq(0, Gens - 1)],
    [receive {gen_done, G} -> ok end || G <- Gs],
    DrainEnd = now_us() + round(Drain * 1.0e6),
    wait_drain(Counters, DrainEnd),
    Collector ! {report, self()},
    {Starts, Lats} = receive {lats, L} -> lists:unzip(L) end,
    Unfinished = counters:get(Counters, 2) - counters:get(Counters, 3),
    %% unfinished requests: their age now, a lower bound of their latency
    Now = now_us(),
    Ages = lists:duplicate(max(Unfinished, 0), max(Now - End, 0)),
    %% their intended starts are not kept: placed at the window's end, where they count
    AgeStarts = lists:duplicate(max(Unfinished, 0), End - MeasureFrom),
    Json = io_lib:format(
             "{\"schedulers\": ~w, \"bindings\": ~w, \"rate\": ~w, \"secs\": ~w, "
             "\"reductions\": ~w, \"generators\": ~w, \"issued\": ~w, \"measured\": ~w, "
             "\"unfinished\": ~w, \"measured_secs\": ~w, \"latencies_us\": ~w, "
             "\"starts_us\": ~w}~n",
             [erlang:system_info(schedulers_online),
              tuple_to_list(erlang:system_info(scheduler_bindings)),
              Rate, Secs, Red, Gens, counters:get(Counters, 1), counters:get(Counters, 2),
              max(Unfinished, 0), (End - MeasureFrom) / 1.0e6, Lats ++ Ages, Starts ++ AgeStarts]),
    ok = file:write_file(Out, Json),
    halt(0);
main(Args) ->
    io:format(standard_error, "beam_load: bad arguments ~p~n", [Args]),
    halt(2).

num(S) ->
    case string:to_float(S) of
        {F, []} -> F;
        _ -> float(list_to_integer(S))
    end.

now_us() -> erlang:monotonic_time(microsecond).

time_us(F) ->
    T0 = now_us(), F(), now_us() - T0.

%% One reduction per call: the request's work, preempted by the BEAM every ~4000 reductions.
work(N) -> work(N, 1).
work(0, Acc) -> Acc;
work(N, Acc) -> work(N - 1, (Acc * 31 + N) band 16#FFFFFF).

%% Fire every request whose intended time has come, then sleep until the next one (timers have
%% millisecond resolution: requests fired late by it count that as latency, alike for every
%% scheduler).
generator(Req, Base, K, Interval, End, Parent) ->
    Next = Base + round(K * Interval),
    Now = now_us(),
    if
        Next >= End ->
            Parent ! {gen_done, self()};
        Next =< Now ->
            Req(Next),
            generator(Req, Base, K + 1, Interval, End, Parent);
        true ->
            receive after (Next - Now + 999) div 1000 -> ok end,
            generator(Req, Base, K, Interval, End, Parent)
    end.

collector(Parent, Acc) ->
    receive
        {lat, S, L} -> collector(Parent, [{S, L} | Acc]);
        {report, To} -> To ! {lats, Acc}
    end,
    _ = Parent.

wait_drain(Counters, DrainEnd) ->
    case counters:get(Counters, 3) >= counters:get(Counters, 2) orelse now_us() >= DrainEnd of
        true -> ok;
        false -> receive after 10 -> ok end, wait_drain(Counters, DrainEnd)
    end.
